"""Search: α spaces (sites, kernels, dose units) and optimizers over Optuna storage."""

"""Engine: models and their cache, vectors, activations, interventions (controllers, hooks), generation."""

"""Report: Pareto fronts and hypervolume, analysis, controller comparison, pick, steering profiles."""

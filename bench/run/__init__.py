"""A run: plan the cells, start workers, train and evaluate each model job."""

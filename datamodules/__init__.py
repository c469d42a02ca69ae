"""LightningDataModules, one file per data source or layout."""

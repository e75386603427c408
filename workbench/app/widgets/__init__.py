"""One module per panel of the workbench app."""

"""One module per instrument family; each turns export bytes into a tidy, validated polars frame."""

"""What sees flows: provider parsers, classification, grouping and the recorder addon."""

"""Provider API parsers: one module per wire format, chosen through `registry`."""

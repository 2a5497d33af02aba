"""Pure code: rules, contracts, config parsing; no sockets."""

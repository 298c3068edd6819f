"""One module per CLI verb, each with `add_parser(subparsers)` and the functions its subcommands run."""

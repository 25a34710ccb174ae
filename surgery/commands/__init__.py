"""One module per CLI subcommand: NAME, HELP, add_arguments(parser), run(args) -> exit code."""

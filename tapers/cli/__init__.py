"""The command line: parse, call the engine, render. Errors become messages here only."""

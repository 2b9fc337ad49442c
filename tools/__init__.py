"""Developer tools (run as scripts from the repository root); a package so tests can import them."""

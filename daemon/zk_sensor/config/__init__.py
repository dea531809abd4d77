"""Configuration plumbing shared by every program: layered settings sources (defaults, a
TOML file, environment variables, flags) and secret files. No role-specific settings here."""

"""Configuration plumbing shared by every program: how a setting is declared (table.py),
the one layering of its sources (defaults, a TOML file, environment variables, flags) and
secret files. No role-specific settings here."""

"""The suite: suite.yaml read, validated and resolved (specs, ε, tables, recipes)."""

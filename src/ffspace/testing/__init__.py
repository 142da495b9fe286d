"""Test helpers shipped with the package: the physics suite every model must pass."""

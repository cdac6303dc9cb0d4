"""Simulated environments a unimask policy runs in. Importing this package registers `unimask/MetaWorld-v0` with
gymnasium when gymnasium is installed (the `robot` extra)."""

try:
    import gymnasium  # noqa: F401
except ImportError:  # the environments need the robot extra; without it nothing is registered
    pass
else:
    from .gym import register

    register()

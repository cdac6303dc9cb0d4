"""Dataset writers: built-in sources (digits, shapes, Meta-World) and converters for a user's own data."""

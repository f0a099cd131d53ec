"""The catalog (apps, models, variants, profiles), live state, the object store and the selector."""

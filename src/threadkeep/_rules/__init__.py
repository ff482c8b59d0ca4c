"""Sans-I/O rules: lifecycle tables, validation, retention, ops and outcomes.

Nothing in this package performs I/O or reads the clock; backends and the Store front call it.
"""

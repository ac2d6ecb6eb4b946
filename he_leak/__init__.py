"""he-leak: can gradient inversion recover homomorphically encrypted training data — and recover what, for whom?"""

__version__ = "0.1.0"

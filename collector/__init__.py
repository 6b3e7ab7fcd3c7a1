"""Trade Lake collector: every Binance spot trade, exact, landed once in a minute-partitioned zone."""

__version__ = "0.1.0"
__all__ = ["__version__"]

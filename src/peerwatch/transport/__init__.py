"""The only sockets and clocks: thin asyncio drivers that pump the sans-IO protocol machines."""

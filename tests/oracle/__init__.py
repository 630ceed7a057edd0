"""Real-tool oracles for kdfix tests.

guest.py boots and dumps QEMU guests, tools.py wraps crash/makedumpfile/drgn, fixtures.py holds the pytest fixtures.
"""

"""The long-running monitoring service, the Flask dashboard and offline replay.
"""

"""The long-running monitoring service, the Flask dashboard and offline replay.

Today: ``service.recording`` (``record``, ``replay_offline``, ``replay_publish``) and the
``vmroc record`` / ``vmroc replay`` commands. The service and its dashboard come later.
"""

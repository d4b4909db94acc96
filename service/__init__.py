"""The long-running monitoring service, the Flask dashboard and offline replay.

Today: ``service.recording`` (``record``, ``replay_offline``, ``replay_publish``),
``service.evaluation`` (``evaluate_recordings``: recordings scored per fault kind against
baselines) with its HTML page (``service.report``), and the ``vmroc record`` /
``vmroc replay`` / ``vmroc eval`` commands. The service and its dashboard come later.
"""

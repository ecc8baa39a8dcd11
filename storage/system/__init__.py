"""Host commands, the mount table, block devices and loop devices.

Nothing else in Stowage runs host commands: everything goes through
``storage.system.executor.Executor``.
"""

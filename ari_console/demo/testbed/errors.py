"""The error of the testbed: a daemon that is missing or did not come up."""

from ...errors import UserError


class TestbedError(UserError):
    """sshd, munged, slurmctld or slurmd missing or not starting; the message names the fix or shows the log.

    >>> isinstance(TestbedError("sshd is missing"), UserError)
    True
    """

    __test__ = False  # not a pytest test class, despite its name

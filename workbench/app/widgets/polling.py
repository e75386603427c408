"""Polling only while shown: a panel that re-reads files on a timer (the runs table, the Sweeps tab) pauses
the timer while its tab is hidden, so the app costs a training job nothing for a tab nobody looks at."""

from __future__ import annotations


class PollWhileShown:
    """Mixin for a widget with a ``poll()`` method: call ``start_polling(seconds)`` in ``on_mount``; the timer
    runs while the widget is shown, and showing it polls at once."""

    _poll_timer = None

    def start_polling(self, seconds: float) -> None:
        self._poll_timer = self.set_interval(seconds, self.poll, pause=True)

    def on_show(self) -> None:
        if self._poll_timer is not None:
            self._poll_timer.resume()
        self.poll()

    def on_hide(self) -> None:
        if self._poll_timer is not None:
            self._poll_timer.pause()

"""Durable timers (sleeps, delayed sends, retry back-off): the timer-scheduler actor."""

"""Signals through which features contribute to shared pages without importing each other.

A receiver of ``home_sections`` returns rendered HTML for the home page; ``demo_seeders``
receivers add demo data in the order of their ``DEMO_ORDER`` attribute.
"""

from blinker import Namespace

signals = Namespace()

home_sections = signals.signal("home-sections")

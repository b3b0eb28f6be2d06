"""``python -m currents_export.settings``: print the README's option table."""

from currents_export.settings import option_table_markdown

print(option_table_markdown(), end="")

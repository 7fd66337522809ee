"""``python -m smart_agent``: the same as the ``smart-agent`` command."""

from smart_agent.cli import main

if __name__ == "__main__":
    main()

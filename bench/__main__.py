"""python -m bench {train,report} [args]"""
import sys

from bench import report, train_finetune

COMMANDS = {"train": train_finetune.main, "report": lambda argv: print(report.write_markdown())}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        raise SystemExit(f"usage: python -m bench {{{','.join(COMMANDS)}}} [args]")
    COMMANDS[sys.argv[1]](sys.argv[2:])

"""python -m bench {train,serve,agreement,report} [args]"""
import sys

from bench import bf16_agreement, report, serve_http, train_finetune

COMMANDS = {"train": train_finetune.main, "serve": serve_http.main, "agreement": bf16_agreement.main, "report": lambda argv: print(report.write_markdown())}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        raise SystemExit(f"usage: python -m bench {{{','.join(COMMANDS)}}} [args]")
    COMMANDS[sys.argv[1]](sys.argv[2:])

from currents_export.cli import main

if __name__ == "__main__":  # not when a worker process (spawn) imports it
    main(prog_name="currents-export")

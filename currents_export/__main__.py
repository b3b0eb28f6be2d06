from currents_export.cli import main

main(prog_name="currents-export")

from flux_pipeline.cli import main

main()

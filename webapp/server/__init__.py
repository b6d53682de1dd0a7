"""The web server on the inference library: the Gradio page and its /generate API (page.py), the
checks of API input (api_input.py), the model's loop in a process of its own (model_process.py),
launching (launch.py) and the command line (cli.py)."""

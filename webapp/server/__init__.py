"""The web server on the inference library: the Gradio page and its /generate API (page.py), the
checks of API input (api_input.py), the model's loop in a process of its own (model_process.py),
launching (launch.py) behind the routes it keeps open (routes.py), the request size limit
(size_limit.py), the end of streams nobody reads (stalled.py) and a temporary folder of its own
(temp_folder.py), and the command line (cli.py)."""

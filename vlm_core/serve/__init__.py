"""The local API server: an OpenAI- and Ollama-compatible HTTP skin over the scheduler (runtime/scheduler.py).

app.py routes and guards (Host, API key, CORS, body size, logging); openai_api.py and ollama_api.py translate each
API's shapes to one `Job` (jobs.py) and back; images.py turns data URLs and base64 into images through the window's
safe decoder; models.py names and finds installed models; objects.py adds boxes and COCO RLE masks.
"""

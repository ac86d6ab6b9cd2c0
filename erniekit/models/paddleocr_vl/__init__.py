"""PaddleOCR-VL: model.py (SigLIP encoder + projector on ERNIE 4.5 0.3B), hf.py, flavors.py."""

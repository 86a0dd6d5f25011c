import sys
from pathlib import Path

# Helper modules of these tests (the independent OSC decoder, FK) live beside them.
sys.path.insert(0, str(Path(__file__).parent))

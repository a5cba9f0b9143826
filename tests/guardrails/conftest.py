import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
POLICY_DIR = Path(__file__).resolve().parents[2] / "policy"
if str(POLICY_DIR) not in sys.path:
    sys.path.insert(0, str(POLICY_DIR))

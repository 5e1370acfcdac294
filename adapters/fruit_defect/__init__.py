"""The fruit team's model: its network (model.py), the images it learns from (samples.py), its training (train.py
decides whether to train, fit.py trains) and the weights file they make, which the runner
(adapters/fruit_defect_runner.py) loads. The facts about that file live here, so the runner, the trainer and its
fitting need no import of each other.
"""

from adapters import WEIGHTS_DIR

# The fruit team's weights file, in ./weights (deploy/teams.yaml names the same file for compose; a test holds
# the two together). The name ends in .ts for the deployments that mount it; its format is WEIGHTS_FORMAT.
WEIGHTS_FILE = "fruit_cls_best.ts"
DEFAULT_WEIGHTS = WEIGHTS_DIR / WEIGHTS_FILE
WEIGHTS_FORMAT = "imagery.fruit_defect.state_dict/1"  # {"format", "meta": JSON text, "state_dict"}, torch.save'd
META_NAME = "meta.json"  # the extra file inside a TorchScript archive (the format of the weights made before)

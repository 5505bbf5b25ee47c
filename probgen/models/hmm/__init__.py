"""Hidden Markov models: the program, forward-backward/Viterbi and the Baum-Welch method."""

from probgen.models.hmm.model import *  # noqa: F403
from probgen.models.hmm.model import __all__ as _model_all

__all__ = list(_model_all)

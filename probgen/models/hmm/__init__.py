"""Hidden Markov models: the program, forward-backward/Viterbi and the Baum-Welch method
(``probgen.fit(hmm, (sequences, lengths))``)."""

from probgen.models.hmm.baum_welch import BaumWelch, initialize_from_data
from probgen.models.hmm.model import *  # noqa: F403
from probgen.models.hmm.model import __all__ as _model_all

__all__ = list(_model_all) + ["BaumWelch", "initialize_from_data"]

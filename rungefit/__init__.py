"""rungefit: fit a 1-D function (the Runge function by default) or a data set with a small network,
and study its gradient, learning rate and fit.

The library API lives in the modules (target, model, train, lr_find, grad, evaluate, runs); this
package imports none of them eagerly, so that `rungefit --help` never pays for importing torch.
"""

__version__ = "0.1.0"

"""The optimisers behind dlg/idlg and ig: functional (vmappable) gradient objectives, L-BFGS with a strong-Wolfe line
search written as generators, and the lockstep driver that serves many runs with one batched pass."""

"""What the pruning and compression passes share, not passes themselves: the channel-group analysis
(``channel_groups``: which channels of which layers must be removed together) and least-squares reconstruction
of the layers after them (``reconstruct``)."""

"""Pairwise quantities over two sample sets in row chunks, so memory stays bounded for any n."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

__all__ = ["row_chunks", "squared_distances", "kth_neighbour_squared_radii", "inside_any_ball",
           "matrix_row_sums"]

CHUNK_ELEMENTS = 2**22  # entries of one (rows, columns) block: 32 MiB in float64


def row_chunks(num_rows: int, num_columns: int) -> Iterator[slice]:
    """Slices of rows such that a ``(rows, num_columns)`` block holds <= CHUNK_ELEMENTS entries."""
    size = max(1, CHUNK_ELEMENTS // max(num_columns, 1))
    for start in range(0, num_rows, size):
        yield slice(start, min(start + size, num_rows))


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""||x_i - y_j||² = ||x_i||² + ||y_j||² - 2 x_i·y_j, shape ``(len(x), len(y))``, clamped at 0."""
    squared = (x * x).sum(-1)[:, None] + (y * y).sum(-1)[None, :] - 2.0 * x @ y.T
    return squared.clamp_min_(0.0)


def kth_neighbour_squared_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Squared distance from each row of ``x`` to its k-th nearest *other* row, shape ``(n,)``."""
    radii = []
    for rows in row_chunks(len(x), len(x)):
        block = squared_distances(x[rows], x)  # (chunk, n)
        index = torch.arange(rows.start, rows.stop, device=x.device)
        block[index - rows.start, index] = 0.0  # the point itself: exactly 0, the 1st "neighbour"
        radii.append(block.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def inside_any_ball(queries: torch.Tensor, centers: torch.Tensor,
                    squared_radii: torch.Tensor) -> torch.Tensor:
    """Whether each query lies in some closed ball B(centers_j, radius_j), bool ``(len(queries),)``."""
    inside = []
    for rows in row_chunks(len(queries), len(centers)):
        block = squared_distances(queries[rows], centers)  # (chunk, num_centers)
        inside.append((block <= squared_radii[None, :]).any(dim=1))
    return torch.cat(inside)


def matrix_row_sums(entries: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row sums ``(len(x),)`` and column sums ``(len(y),)`` of the matrix ``entries(x, y)``,
    built one row chunk at a time (float64 sums)."""
    row_sums = []
    column_sums = torch.zeros(len(y), dtype=torch.float64, device=y.device)
    for rows in row_chunks(len(x), len(y)):
        block = entries(x[rows], y).to(torch.float64)  # (chunk, len(y))
        row_sums.append(block.sum(dim=1))
        column_sums += block.sum(dim=0)
    return torch.cat(row_sums), column_sums

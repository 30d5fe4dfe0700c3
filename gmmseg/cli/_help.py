"""How ``--help`` reads: options in groups, examples last, the command list uncut.

Owns the group each option is shown in (by its parameter name, so an option
defined once in :mod:`.options` lands in the same group in every command)
and the layout of the Examples section.  Changes no option and no value.
"""

from __future__ import annotations

import click

#: The sections of a command's ``--help``, in order; options not listed
#: below are shown last, under "Other options".
_GROUP_OF = {
    "Input": ("bands", "nodata", "volume", "series", "mask", "recursive", "include",
              "exclude"),
    "Model": ("preset", "n_components", "k_min", "k_max", "criterion", "covariance_type",
              "covariance_types", "features", "pca", "seed", "max_fit_samples", "init_params",
              "n_init", "max_iter", "tol", "min_region_size", "smoothing", "connectivity",
              "shared_model", "per_image"),
    "Output": ("out_dir", "output", "plot", "alpha", "overwrite", "resume"),
    "Regions and maps": ("regions", "region_scale", "save_proba", "save_loglik",
                         "save_uncertainty", "save_anomaly", "anomaly_quantile",
                         "anomaly_threshold"),
    "Performance": ("threads", "max_memory", "jobs", "scheduler"),
}
_GROUP = {name: group for group, names in _GROUP_OF.items() for name in names}


class GroupedCommand(click.Command):
    """A command whose ``--help`` shows its options by group and its examples at the end.

    The examples are the command's ``epilog``: one shell line each, with
    optional ``#`` comments; they are printed as written, not re-wrapped.
    """

    def format_options(self, ctx, formatter):
        sections: dict[str, list] = {}
        for param in self.get_params(ctx):
            if not isinstance(param, click.Option):
                continue  # arguments are in the usage line
            record = param.get_help_record(ctx)
            if record is not None:
                sections.setdefault(_GROUP.get(param.name, "Other"), []).append(record)
        for title in (*_GROUP_OF, "Other"):
            if title in sections:
                with formatter.section(f"{title} options"):
                    formatter.write_dl(sections[title])

    def format_epilog(self, ctx, formatter):
        if not self.epilog:
            return
        with formatter.section("Examples"):
            for line in self.epilog.strip("\n").splitlines():
                formatter.write(f"{'':>{formatter.current_indent}}{line.strip()}\n")


class CommandList(click.Group):
    """The ``gmmseg`` group: each command's first sentence in full, wrapped, not cut."""

    def format_commands(self, ctx, formatter):
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                text = command.short_help or (command.help or "").split("\n\n")[0]
                rows.append((name, " ".join(text.split())))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

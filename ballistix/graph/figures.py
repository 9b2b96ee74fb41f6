"""Figures of a `LinkageGraph` for analysts: each gun's timeline, the scenes on a map, trafficking routes.

Plain functions of the graph that draw with matplotlib on the axes given (or a new figure's)
and return the axes, as `LinkageGraph.plot` does. They read the graph's analyses
(`ballistix.graph.analysis`) and need nothing beyond matplotlib: no pandas, no network.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable
from pathlib import Path

from .._html import BLUE, GREEN, LIGHT, MUTED
from ..errors import ParameterError
from . import analysis

__all__ = ["plot_timeline", "plot_map", "plot_flows", "NO_BASEMAP"]

#: What `plot_map` writes on a map drawn without a basemap.
NO_BASEMAP = "no basemap available (offline): scenes at their longitude and latitude"


def _axes(ax, size):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=size)
    return ax


def _date(value) -> _dt.date | None:
    """A record's date, or None where there is none or it is no date (drawn without it, never fails)."""
    try:
        return _dt.date.fromisoformat(str(value)[:10]) if value else None
    except ValueError:
        return None


#: Text drawn as typed: an id like "$x$" is no formula.
_PLAIN = {"parse_math": False, "usetex": False}


def _timeline_groups(g, which) -> list[int]:
    """Group indices (`LinkageGraph.groups` order) of ``which``: None, an exhibit id, a group index, or a list."""
    groups = g._sorted_groups()
    if which is None:
        out = []
        for k, members in enumerate(groups):
            if len(members) < 2:
                break
            scenes, guns = analysis._origins(g, members)
            if len(scenes) >= 2 or (scenes and guns):
                out.append(k)
        return out
    items = list(which) if isinstance(which, (list, tuple, set, frozenset)) else [which]
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise ParameterError(f"a timeline shows exhibit ids or group indices, got {item!r}")
        if isinstance(item, str):
            g.group_of(item)  # refuses an unknown exhibit
            k = next(i for i, s in enumerate(groups) if item in s)
        elif 0 <= item < len(groups):
            k = item
        else:
            raise ParameterError(f"no group {item}: the graph has {len(groups)} groups (0 to {len(groups) - 1})")
        if k not in out:
            out.append(k)
    return out


def plot_timeline(g, which=None, *, ax=None, max_rows: int = 40, labels: bool = True):
    """The use of guns over time: one row per gun, its scenes by date and its recovery.

    Circles are the scenes where the gun's cartridge cases were found (joined by a line, labelled
    with the scene ids); a triangle is the recovery of the firearm whose test fires are in the
    group. Scenes or recoveries without a date are left off.

    Parameters
    ----------
    g : LinkageGraph
    which : str, int, list or None
        An exhibit id (the gun that fired it), a group index (as `LinkageGraph.groups` and
        `frames.groups_frame` number them), or a list of these. None (default): every gun
        that links two or more scenes, or a scene to a recovered firearm, largest first.
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure's axes by default.
    max_rows : int
        At most this many guns, the first ones (largest first by default); the title says so.
    labels : bool
        Label each circle with its scene id.

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> from ballistix.graph.figures import plot_timeline
    >>> ax = plot_timeline(g)             # doctest: +SKIP
    >>> ax = plot_timeline(g, "E0004")    # the gun that fired exhibit E0004
    """
    import matplotlib.dates

    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        raise ParameterError(f"max_rows must be a positive whole number, got {max_rows!r}")
    ks = _timeline_groups(g, which)
    shown = f"the first {max_rows} of {len(ks):,} guns: " if len(ks) > max_rows else ""
    ks = ks[:max_rows]
    ax = _axes(ax, (9, 0.45 * len(ks) + 1.5))
    groups = g._sorted_groups()
    names = []
    for y, k in enumerate(ks):
        events = analysis.timeline(g, min(groups[k]))
        scenes = [(d, e) for e in events if e["event"] == "scene" and (d := _date(e["date"]))]
        if scenes:
            ax.plot([d for d, _ in scenes], [y] * len(scenes), "o-", color=BLUE, ms=6)
            if labels:
                for d, e in scenes:
                    ax.annotate(
                        e["scene"],
                        (d, y),
                        textcoords="offset points",
                        xytext=(0, 7),
                        ha="center",
                        fontsize=7,
                        **_PLAIN,
                    )
        recovered = [(d, e) for e in events if e["event"] != "scene" and (d := _date(e["date"]))]
        for d, _ in recovered:
            ax.plot([d], [y], "^", color=GREEN, ms=9)
        guns = [e["firearm"] for e in events if e["event"] != "scene"]
        names.append(f"gun {k}" + (f" ({', '.join(guns)})" if guns else ""))
    ax.set_yticks(range(len(ks)), names, fontsize=8, **_PLAIN)
    ax.set_ylim(len(ks) - 0.4, -0.7)  # the first gun on top, as in the groups table; room for the labels
    locator = matplotlib.dates.AutoDateLocator(maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(matplotlib.dates.ConciseDateFormatter(locator))
    ax.grid(alpha=0.3)
    if not ks:
        ax.text(0.5, 0.5, "no gun links two scenes or a scene to a firearm", transform=ax.transAxes, ha="center")
    ax.set_title(f"{shown}scenes of each gun (circles) and its recovery (triangle)", fontsize=10)
    return ax


def _scene_points(g) -> tuple[dict[str, tuple[float, float]], int]:
    """Scene id -> (lon, lat) of the scenes with coordinates, and the number without."""
    points, missing = {}, 0
    for sid in g.ids("scene"):
        d = g.node("scene", sid)
        try:
            lon, lat = float(d["lon"]), float(d["lat"])
        except (KeyError, TypeError, ValueError):
            missing += 1
            continue
        if math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90:
            points[sid] = (lon, lat)
        else:
            missing += 1
    return points, missing


def _degrees(hemispheres: str):
    from matplotlib.ticker import FuncFormatter

    def fmt(v, _pos):
        return f"{abs(v):.4g}\N{DEGREE SIGN}{hemispheres[int(v >= 0)] if v else ''}"

    return FuncFormatter(fmt)


def _draw_basemap(ax, basemap, extent) -> str | None:
    """Draw ``basemap`` under the scenes; returns its attribution, if any."""
    if callable(basemap):
        basemap(ax)
        return None
    if not isinstance(basemap, (tuple, list)) or len(basemap) not in (2, 3):
        raise ParameterError(
            "basemap must be None, (image, extent), (image, extent, attribution) or a function of the axes; "
            f"got {type(basemap).__name__}"
        )
    image, box = basemap[0], basemap[1]
    if isinstance(image, (str, Path)):
        import matplotlib.image

        image = matplotlib.image.imread(Path(image))
    try:
        west, east, south, north = (float(v) for v in box)
    except (TypeError, ValueError):
        raise ParameterError(f"a basemap's extent is (west, east, south, north) in degrees, got {box!r}") from None
    if not (west < east and south < north):
        raise ParameterError(f"a basemap's extent is (west, east, south, north) in degrees, got {box!r}")
    ax.imshow(image, extent=(west, east, south, north), origin="upper", aspect="auto", zorder=0)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    return str(basemap[2]) if len(basemap) == 3 and basemap[2] else None


def plot_map(
    g,
    ax=None,
    *,
    basemap: tuple | Callable | None = None,
    labels: bool = True,
):
    """The scenes on a map, coloured by the gun used there; lines join scenes that share a gun.

    Each scene with a longitude and a latitude (``lon``, ``lat``, decimal degrees) is one point,
    in the colour of the largest same-gun group seen there; scenes that share no gun with
    another are grey. A line joins two scenes where one gun was seen, wider for more guns.
    Nothing is fetched from the network: real geography is drawn only from a basemap the
    caller has at hand.

    Parameters
    ----------
    g : LinkageGraph
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure's axes by default.
    basemap : tuple, callable or None
        - None (default): no basemap. Longitude and latitude are drawn with one degree of
          latitude as long as a degree of longitude is at the scenes' mean latitude, a
          graticule, and the note `NO_BASEMAP`.
        - ``(image, extent)`` or ``(image, extent, attribution)``: a picture of the area (an
          array as `matplotlib.pyplot.imshow` takes, or the path of a PNG) and what it covers,
          ``(west, east, south, north)`` in degrees, drawn under the scenes; the attribution
          (the map's licence, e.g. "(c) OpenStreetMap contributors") is written in a corner.
          The picture is taken to be in plain longitude/latitude: a Web-Mercator tile is
          close enough over a city, not over a country.
        - a function of the axes, called once the scenes are drawn (their extent set, in
          longitude/latitude): it draws the basemap itself, e.g. with a tile provider cached
          on disk or a local raster, ``lambda ax: contextily.add_basemap(ax, crs="EPSG:4326",
          source="city.tif")``. contextily, cartopy and geopandas are not dependencies of
          ballistix; such a function uses them when the caller has them.
    labels : bool
        Label each scene with its id.

    Returns
    -------
    matplotlib.axes.Axes
        The scenes are its first collection (one point per scene with coordinates).

    Examples
    --------
    >>> from ballistix.graph.figures import plot_map
    >>> ax = plot_map(g)                                                  # doctest: +SKIP
    >>> ax = plot_map(g, basemap=(plt.imread("city.png"), (4.25, 4.40, 52.03, 52.12), "(c) OSM"))  # doctest: +SKIP
    """
    import matplotlib
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    ax = _axes(ax, (8, 6.5))
    points, missing = _scene_points(g)
    pairs = analysis.scene_pairs(g)
    colour_of: dict[str, int] = {}  # scene -> the largest group (smallest index) that links it
    for (a, b), ks in pairs.items():
        for s in (a, b):
            colour_of[s] = min(colour_of.get(s, ks[0]), *ks)
    palette = matplotlib.colormaps["tab10"]
    for (a, b), ks in pairs.items():
        if a in points and b in points:
            (x0, y0), (x1, y1) = points[a], points[b]
            ax.plot([x0, x1], [y0, y1], "-", color="0.55", lw=0.8 + 0.8 * len(ks), zorder=2)
    ids = list(points)
    xs = [points[s][0] for s in ids]
    ys = [points[s][1] for s in ids]
    colours = [palette(colour_of[s] % 10) if s in colour_of else LIGHT for s in ids]
    ax.scatter(xs, ys, s=70, c=colours, edgecolors="k", linewidths=0.5, zorder=3)
    ax.collections[-1].set_label("scenes")
    if labels:
        for s in ids:
            ax.annotate(s, points[s], textcoords="offset points", xytext=(5, 4), fontsize=7, zorder=4, **_PLAIN)
    if ids:
        west, east, south, north = min(xs), max(xs), min(ys), max(ys)
        pad_x = max(0.1 * (east - west), 0.005)
        pad_y = max(0.1 * (north - south), 0.005)
        extent = (west - pad_x, east + pad_x, south - pad_y, north + pad_y)
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        # a degree of longitude is shorter than one of latitude, by cos(latitude)
        aspect = 1 / max(math.cos(math.radians((south + north) / 2)), 0.05)
        ax.set_aspect(aspect, adjustable="box")
    else:
        extent = None
        ax.text(0.5, 0.5, "no scene has coordinates", transform=ax.transAxes, ha="center", color=MUTED)
    notes = []
    if basemap is None:
        notes.append(NO_BASEMAP)
        ax.grid(True, ls=":", lw=0.6, color="0.6", zorder=1)  # the graticule
    elif extent is not None:
        attribution = _draw_basemap(ax, basemap, extent)
        if not callable(basemap):
            ax.set_aspect(aspect, adjustable="box")  # imshow set its own
        if attribution:
            notes.append(attribution)
    if missing:
        notes.append(f"{missing} scene{'s' if missing != 1 else ''} without coordinates not drawn")
    if notes:
        ax.text(0.01, 0.01, "; ".join(notes), transform=ax.transAxes, fontsize=7, color=MUTED, va="bottom", zorder=5)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=6))
    ax.xaxis.set_major_formatter(_degrees("WE"))
    ax.yaxis.set_major_formatter(_degrees("SN"))
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    linked = Line2D([], [], color="0.55", lw=1.6, label="scenes sharing a gun")
    if pairs:
        ax.legend(handles=[linked], fontsize=8, loc="upper right")
    ax.set_title(f"{len(ids)} scenes, coloured by gun; grey: no gun shared with another scene", fontsize=10)
    return ax


def plot_flows(g, ax=None):
    """Trafficking routes: recovered firearms by country of origin and country of recovery.

    One horizontal bar per route ("origin -> recovery"), most firearms first
    (`LinkageGraph.trafficking_flows`); firearms without both countries are not counted.

    Parameters
    ----------
    g : LinkageGraph
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure's axes by default.

    Returns
    -------
    matplotlib.axes.Axes
        One bar (a `matplotlib.patches.Rectangle` in ``ax.patches``) per route.

    Examples
    --------
    >>> from ballistix.graph.figures import plot_flows
    >>> ax = plot_flows(g)  # doctest: +SKIP
    """
    from matplotlib.ticker import MaxNLocator

    flows = analysis.trafficking_flows(g)
    ax = _axes(ax, (7, 0.4 * len(flows) + 1.4))
    labels = [f"{o} \N{RIGHTWARDS ARROW} {r}" for o, r in flows]
    ax.barh(range(len(flows)), list(flows.values()), color="tab:purple")
    ax.set_yticks(range(len(flows)), labels, **_PLAIN)
    ax.invert_yaxis()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # firearms are counted whole
    ax.set_xlabel("recovered firearms")
    if not flows:
        ax.text(0.5, 0.5, "no recovered firearm with both countries recorded", transform=ax.transAxes, ha="center")
    ax.set_title("trafficking routes: country of origin \N{RIGHTWARDS ARROW} country of recovery", fontsize=10)
    return ax

"""The console's two themes: ``ari-dark`` (night shifts) and ``ari-light`` (a bright office).

Loaded by ``ari_console.tui.app`` and registered with ``App.register_theme``;
pick one with ``ari tui --theme`` or at run time (ctrl+t, or "Theme" in the
command palette).
"""

from textual.theme import Theme

ARI_DARK = Theme(
    name="ari-dark",
    primary="#4FA3E0",
    secondary="#7AA6C2",
    accent="#F2B134",
    warning="#F2B134",
    error="#E5534B",
    success="#57AB5A",
    foreground="#D8DEE9",
    background="#11161C",
    surface="#1A2129",
    panel="#232C36",
    dark=True,
)

ARI_LIGHT = Theme(
    name="ari-light",
    primary="#0B5FA5",
    secondary="#3D6E8F",
    accent="#B35C00",
    warning="#9A6700",
    error="#C4312B",
    success="#2D7A34",
    foreground="#1F2328",
    background="#F6F8FA",
    surface="#FFFFFF",
    panel="#E7ECF1",
    dark=False,
)

THEMES = (ARI_DARK, ARI_LIGHT)

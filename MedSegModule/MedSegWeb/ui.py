"""The page: a toolbar (upload, model, Segment/Cancel, progress, paint/erase, downloads), a side panel
with the segments (colour, name, volume in mL, show/hide) and trame-slicer's slice and 3D views.

Element ids (``medseg-*``) are what the browser test drives; the handlers come from :mod:`.app`.
"""

from __future__ import annotations

from trame.widgets import client, html
from trame_vuetify.ui.vuetify3 import SinglePageWithDrawerLayout
from trame_vuetify.widgets import vuetify3 as v


def download_click(trigger: str, fmt: str) -> str:
    """Client code: save what the server's export returns under the session's download name."""
    return f"utils.download(download_stem + '.{fmt}', trigger('{trigger}', ['{fmt}']), 'application/octet-stream')"


def _evaluation_panel(triggers: dict[str, str]) -> None:
    """Upload a reference, Evaluate, a table of Dice / HD95 / volume difference, the HTML report."""
    with html.Div(v_show="segments.length", classes="mt-4"):
        html.Div("Evaluate against a reference", classes="text-subtitle-2")
        v.VFileInput(
            id="medseg-reference", label="Reference (.seg.nrrd or label map)", density="compact",
            change=f"trigger('{triggers['reference']}', [$event.target.files])", prepend_icon="mdi-file-compare",
            hide_details=True, disabled=("running",),
        )
        with html.Div(classes="d-flex my-2"):
            v.VBtn("Evaluate", id="medseg-evaluate", size="small", classes="mr-2",
                   click=f"trigger('{triggers['evaluate']}')", disabled=("!reference_name || running",))
            v.VBtn("Report", id="medseg-report", size="small", prepend_icon="mdi-download",
                   click=("utils.download(download_stem + '_report.html', "
                          f"trigger('{triggers['report']}'), 'text/html')"), disabled=("!evaluation.length",))
        html.Div("Mean Dice {{ mean_dice }}", id="medseg-mean-dice", v_show="mean_dice", classes="text-body-2")
        with v.VTable(id="medseg-evaluation", density="compact", v_show="evaluation.length"):
            with html.Thead(), html.Tr():
                for title in ("Segment", "Dice", "HD95 mm", "Vol. diff %"):
                    html.Th(title)
            with html.Tbody(), html.Tr(v_for="row in evaluation", key="row.name"):
                for key in ("name", "dice", "hd95_mm", "volume_diff_percent"):
                    html.Td(f"{{{{ row.{key} }}}}")


def build_ui(server, layout_manager, triggers: dict[str, str]):
    """Build and return the page layout; ``triggers`` maps action names to trame trigger names."""
    with SinglePageWithDrawerLayout(server, full_height=True) as layout:
        layout.title.set_text("MedSeg")
        client.Style("html { overflow-y: hidden; }")
        layout.root.theme = "dark"
        with layout.toolbar:
            v.VSpacer()
            v.VFileInput(
                id="medseg-upload",
                label="Upload volume", title="NIfTI, NRRD, MHA or a zipped DICOM folder",
                change=f"trigger('{triggers['upload']}', [$event.target.files])",
                prepend_icon="mdi-file-upload",
                density="compact", hide_details=True, style="max-width: 320px;",
                disabled=("running",),
            )
            v.VSelect(
                id="medseg-model", v_model=("model", ""), items=("models", []),
                label="Model", density="compact", hide_details=True, style="max-width: 260px;",
                disabled=("running",),
            )
            v.VBtn("Segment", id="medseg-segment", click=f"trigger('{triggers['segment']}')", prepend_icon="mdi-brain",
                   disabled=("!volume_name || !model || running",), classes="mx-1")
            v.VBtn("Cancel", id="medseg-cancel", click=f"trigger('{triggers['cancel']}')", prepend_icon="mdi-cancel",
                   disabled=("!running",), classes="mx-1")
            v.VBtn("Paint", id="medseg-paint", prepend_icon="mdi-brush", classes="mx-1",
                   click=f"trigger('{triggers['paint']}')", disabled=("!segments.length || running",),
                   color=("tool === 'paint' ? 'primary' : undefined",))
            v.VBtn("Erase", id="medseg-erase", prepend_icon="mdi-eraser", classes="mx-1",
                   click=f"trigger('{triggers['erase']}')", disabled=("!segments.length || running",),
                   color=("tool === 'erase' ? 'primary' : undefined",))
            v.VBtn("Undo", id="medseg-undo", prepend_icon="mdi-undo", classes="mx-1",
                   click=f"trigger('{triggers['undo']}')", disabled=("!can_undo || running",))
            v.VBtn(".seg.nrrd", id="medseg-download-seg", prepend_icon="mdi-download", classes="mx-1",
                   click=download_click(triggers["download"], "seg.nrrd"), disabled=("!segments.length || running",))
            v.VBtn(".nii.gz", id="medseg-download-nii", prepend_icon="mdi-download", classes="mx-1",
                   click=download_click(triggers["download"], "nii.gz"), disabled=("!segments.length || running",))
        with layout.drawer as drawer:
            drawer.width = 300
            with html.Div(classes="pa-3"):
                v.VSelect(id="medseg-history", label="Uploads of this session", items=("history", []),
                          model_value=("current",), density="compact", hide_details=True, classes="mb-2",
                          v_show="history.length > 1", disabled=("running",),
                          update_modelValue=f"trigger('{triggers['history']}', [$event])")
                html.Div("{{ volume_name || 'No volume loaded' }}", id="medseg-volume", classes="text-subtitle-1")
                html.Div("Device: {{ device }}", classes="text-caption")
                v.VProgressLinear(id="medseg-progress", model_value=("progress", 0), height=8,
                                  color=("running ? 'primary' : 'success'",), classes="my-2")
                html.Div("{{ status }}", id="medseg-status", classes="text-body-2")
                v.VAlert(v_if="error", text=("error",), type="error", density="compact", id="medseg-error",
                         classes="my-2")
                v.VSlider(v_model=("opacity", 0.5), min=0, max=1, step=0.05, label="Opacity",
                          hide_details=True, classes="my-2", v_show="segments.length")
                html.Div("Click a segment to paint with it.", classes="text-caption", v_show="segments.length")
                with v.VList(id="medseg-segments", density="compact"), v.VListItem(
                    v_for="segment in segments", key="segment.id", active=("segment.id === active_segment",),
                    click=f"trigger('{triggers['select']}', [segment.id])",
                ), html.Div(classes="d-flex align-center"):
                    v.VIcon("{{ segment.visible ? 'mdi-eye' : 'mdi-eye-off' }}", size="small", classes="mr-2",
                            click=(f"$event.stopPropagation(); "
                                   f"trigger('{triggers['visible']}', [segment.id, !segment.visible])"))
                    html.Span(style=("{background: segment.color, width: '14px', height: '14px', "
                                     "display: 'inline-block', borderRadius: '3px'}",), classes="mr-2")
                    html.Span("{{ segment.name }}", classes="segment-name flex-grow-1")
                    html.Span("{{ segment.ml }} mL", classes="text-caption")
                _evaluation_panel(triggers)
        with layout.content, html.Div(style="height: calc(100vh - 64px); position: relative;"):
            layout_manager.initialize_layout_grid(layout)
    return layout

"""Views of a graph: the notebook widget (:mod:`.widget`), the standalone HTML page
(:mod:`.page`), what both draw (:mod:`.drawing`, :mod:`.panel`) and how it looks (:mod:`.style`,
``static/``).  Nothing is imported here, so that the graph can use the page without the widget."""
